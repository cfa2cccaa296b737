//! Protocols through the proxy over real sockets: h2c prior knowledge downstream, gRPC
//! (unary and bidirectional streaming, with trailers) to an HTTP/2 backend, GRPCRoute
//! routing by service and method, and WebSocket upgrades.

mod support;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use support::*;
use tokio::sync::mpsc;

type FrameResult = Result<Frame<Bytes>, Infallible>;

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn channel_body(rx: mpsc::Receiver<FrameResult>) -> TestBody {
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    StreamBody::new(Box::pin(stream)).boxed_unsync()
}

/// A gRPC-shaped HTTP/2 backend: every data frame it receives is echoed back as it
/// arrives (prefixed messages pass through unchanged); when the request ends it sends
/// trailers `grpc-status: 0`. Its name comes back in `x-backend`.
async fn grpc_backend() -> SocketAddr {
    named_grpc_backend("grpc").await
}

async fn named_grpc_backend(name: &'static str) -> SocketAddr {
    listen(move |s| async move {
        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| async move {
            assert_eq!(
                req.headers().get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/grpc"[..])
            );
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let (tx, rx) = mpsc::channel::<FrameResult>(16);
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        let _ = tx.send(Ok(Frame::data(data))).await;
                    }
                }
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                trailers.insert("grpc-message", http::HeaderValue::from_static("done"));
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            let mut resp = http::Response::new(channel_body(rx));
            resp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            if let Ok(v) = http::HeaderValue::from_str(&authority) {
                resp.headers_mut().insert("x-seen-authority", v);
            }
            resp.headers_mut()
                .insert("x-backend", http::HeaderValue::from_static(name));
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

async fn ws_backend() -> SocketAddr {
    listen(|s| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                let _ = ws.send(msg).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn h2c_grpc_and_websocket_end_to_end() {
    let (web, grpc, ws) = (echo("web").await, grpc_backend().await, ws_backend().await);
    let all = [
        service("default", "web", web, None),
        service("default", "grpc", grpc, Some("kubernetes.io/h2c")),
        service("default", "ws", ws, None),
        ingress("web.example", "web"),
        ingress("grpc.example", "grpc"),
        ingress("ws.example", "ws"),
    ]
    .concat();
    let (p, _) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[]).await;

    // h2c with prior knowledge, to an HTTP/1.1 backend.
    let r = h2c_get(p.http, "web.example", "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.service(), "web");
    assert_eq!(r.json()["version"], "HTTP/1.1");

    // gRPC over h2c: a bidirectional stream where each reply arrives before the next
    // request message is sent, then trailers.
    let tcp = tokio::net::TcpStream::connect(p.http)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<FrameResult>(4);
    let req = http::Request::post("http://grpc.example/echo.Echo/Chat")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(channel_body(rx))
        .expect("req");
    let resp = sender.send_request(req).await.expect("response headers");
    assert_eq!(resp.status(), 200);
    let seen = resp
        .headers()
        .get("x-seen-authority")
        .map(|v| v.as_bytes().to_vec());
    assert_eq!(
        seen.as_deref(),
        Some(&b"grpc.example"[..]),
        "the backend sees the real :authority"
    );
    let mut body = resp.into_body();
    for i in 0..3 {
        let msg = format!("message {i}");
        tx.send(Ok(Frame::data(grpc_frame(msg.as_bytes()))))
            .await
            .expect("send");
        let mut got = Vec::new();
        while got.len() < 5 + msg.len() {
            let frame = body.frame().await.expect("frame").expect("ok");
            got.extend_from_slice(frame.into_data().expect("data").chunk());
        }
        assert_eq!(&got[5..], msg.as_bytes(), "stream message {i}");
    }
    drop(tx);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        if let Ok(t) = frame.expect("frame").into_trailers() {
            trailers = Some(t);
        }
    }
    let trailers = trailers.expect("gRPC trailers arrive through the proxy");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );

    // Unary gRPC on a fresh stream.
    let req = http::Request::post("http://grpc.example/echo.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(grpc_frame(b"ping")).boxed_unsync())
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"done"[..])
    );
    assert_eq!(&collected.to_bytes()[5..], b"ping");

    // WebSocket through an Ingress.
    let tcp = tokio::net::TcpStream::connect(p.http)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.example/chat", tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "world"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
        let echoed = ws.next().await.expect("message").expect("ok");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");
    p.running.shutdown().await;
}

/// One unary gRPC call over `sender`: (HTTP status, backend name, grpc-status).
async fn unary(
    sender: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    host: &str,
    path: &str,
    extra: Option<(&str, &str)>,
) -> (u16, String, String) {
    let mut req = http::Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Full::new(grpc_frame(b"hi")).boxed_unsync())
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let backend = resp
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let collected = resp.into_body().collect().await.expect("body");
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, backend, grpc_status)
}

#[tokio::test]
async fn grpc_route_routes_by_service_and_method() {
    let (unary_be, chat_be, admin_be, other_be) = (
        named_grpc_backend("unary").await,
        named_grpc_backend("chat").await,
        named_grpc_backend("admin").await,
        named_grpc_backend("tenant").await,
    );
    // No appProtocol on the Services: a GRPCRoute backend speaks HTTP/2 regardless.
    let gateway = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: h2c, protocol: HTTP, port: 9090}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example]
  rules:
  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: chat, port: 80}]
  - matches: [{method: {service: echo.Echo, method: Unary}}]
    backendRefs: [{name: unary, port: 80}]
  - matches: [{method: {type: RegularExpression, method: 'Admin.*'}}]
    backendRefs: [{name: admin, port: 80}]
  - matches: [{method: {service: echo.Echo}, headers: [{name: x-tenant, value: blue}]}]
    backendRefs: [{name: tenant, port: 80}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-route, value: tenant}]}
";
    let all = [
        service("default", "unary", unary_be, None),
        service("default", "chat", chat_be, None),
        service("default", "admin", admin_be, None),
        service("default", "tenant", other_be, None),
        gateway.to_string(),
    ]
    .concat();
    let (_p, ports) = start_proxy(&[("classes.yaml", CLASSES), ("all.yaml", &all)], &[9090]).await;
    let tcp = tokio::net::TcpStream::connect(ports[0])
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let h = "grpc.example";
    // Service and method beat service alone, whatever the rule order.
    assert_eq!(
        unary(&mut sender, h, "/echo.Echo/Unary", None).await,
        (200, "unary".into(), "0".into())
    );
    assert_eq!(
        unary(&mut sender, h, "/echo.Echo/Chat", None).await,
        (200, "chat".into(), "0".into())
    );
    // A header match beats the same service without one.
    assert_eq!(
        unary(
            &mut sender,
            h,
            "/echo.Echo/Chat",
            Some(("x-tenant", "blue"))
        )
        .await,
        (200, "tenant".into(), "0".into())
    );
    assert_eq!(
        unary(&mut sender, h, "/ops.Admin/AdminReset", None).await,
        (200, "admin".into(), "0".into())
    );
    let (status, backend, _) = unary(&mut sender, h, "/ops.Admin/Reset", None).await;
    assert_eq!((status, backend.as_str()), (404, ""), "no rule matches");
    let (status, _, _) = unary(&mut sender, "other.example", "/echo.Echo/Chat", None).await;
    assert_eq!(status, 404, "hostnames apply to GRPCRoutes");
}
