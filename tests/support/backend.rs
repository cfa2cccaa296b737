//! A controllable HTTP/1.1 backend for resilience tests: it counts requests and open
//! connections, answers with a status (and delay) that the test can change at any
//! time, has its own `/health` status, remembers the paths it saw, and can be killed
//! (listener and every connection closed at once).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct State {
    /// Requests other than health probes.
    pub hits: AtomicUsize,
    pub health_probes: AtomicUsize,
    pub status: AtomicU16,
    pub health_status: AtomicU16,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    pub open_connections: AtomicUsize,
    pub max_open_connections: AtomicUsize,
    pub connections_total: AtomicUsize,
    pub paths: Mutex<Vec<String>>,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let state = Arc::new(State::default());
        state.status.store(200, Ordering::Relaxed);
        state.health_status.store(200, Ordering::Relaxed);
        let (st, nm) = (state.clone(), name.to_string());
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so killing the backend closes them.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((s, _)) = accepted else { continue };
                        conns.spawn(serve(s, st.clone(), nm.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            state,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, s: u16) {
        self.state.status.store(s, Ordering::SeqCst);
    }

    pub fn set_health(&self, s: u16) {
        self.state.health_status.store(s, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Closes the listener and every connection: the port refuses from now on.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// An EndpointSlice of Service `service` for this backend.
    pub fn slice(&self, service: &str) -> String {
        endpoint_slice(service, &format!("{service}-{}", self.name), self.addr)
    }
}

/// EndpointSlice `name` of Service `service` (namespace default) with one ready
/// endpoint at `addr`, its port named `http`.
pub fn endpoint_slice(service: &str, name: &str, addr: SocketAddr) -> String {
    format!(
        "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}}}]
",
        port = addr.port(),
        ip = addr.ip()
    )
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(s: tokio::net::TcpStream, st: Arc<State>, name: String) {
    let open = st.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_open_connections.fetch_max(open, Ordering::SeqCst);
    st.connections_total.fetch_add(1, Ordering::SeqCst);
    let svc = {
        let st = st.clone();
        service_fn(move |req: Request<Incoming>| {
            let (st, name) = (st.clone(), name.clone());
            async move {
                let path = req.uri().path().to_string();
                let _ = req.into_body().collect().await;
                if path == "/health" {
                    st.health_probes.fetch_add(1, Ordering::SeqCst);
                    let mut r = Response::new(Full::new(Bytes::from_static(b"health")));
                    *r.status_mut() =
                        http::StatusCode::from_u16(st.health_status.load(Ordering::SeqCst))
                            .unwrap_or(http::StatusCode::OK);
                    return Ok::<_, std::convert::Infallible>(r);
                }
                st.hits.fetch_add(1, Ordering::SeqCst);
                st.paths
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(path);
                let delay = st.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let mut r = Response::new(Full::new(Bytes::from(name.clone())));
                *r.status_mut() = http::StatusCode::from_u16(st.status.load(Ordering::SeqCst))
                    .unwrap_or(http::StatusCode::OK);
                r.headers_mut()
                    .insert("x-backend", name.parse().expect("header value"));
                Ok(r)
            }
        })
    };
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .await;
    st.open_connections.fetch_sub(1, Ordering::SeqCst);
}
