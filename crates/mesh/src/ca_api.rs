//! The CA's API over HTTPS. A node proxy posts a certificate signing request for an
//! identity with a token that speaks for its node (a bootstrap token, or on a cluster a
//! service-account token that a [`NodeAuth`] reviews); the CA signs only if the token
//! admits that node and a meshed workload of that identity runs on it. The server presents the
//! controller's own SPIFFE identity, which clients check against the mesh root.
//!
//! `POST /v1/certificates` `{"identity": "spiffe://...", "csr": "PEM"}` with
//! `Authorization: Bearer TOKEN` answers `{"certificateChain", "trustBundle",
//! "expiresAt"}`; `GET /v1/trust-bundle` answers the roots (PEM).

use crate::ca::CertificateAuthority;
use crate::identity::Identity;
use crate::tls;
use arc_swap::ArcSwap;
use bytes::Bytes;
use gatehouse_translate::mesh::MeshSnapshot;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// The namespace and service account the controller's identity names.
pub const CONTROLLER_NAMESPACE: &str = "gatehouse-system";
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "gatehouse-controller";

/// The controller's identity in `trust_domain`.
pub fn controller_identity(trust_domain: &str) -> Identity {
    Identity::new(
        trust_domain,
        CONTROLLER_NAMESPACE,
        CONTROLLER_SERVICE_ACCOUNT,
    )
}

/// Node bootstrap tokens: each names the node it may speak for (`*`: any node).
#[derive(Debug, Default, Clone)]
pub struct NodeTokens {
    tokens: HashMap<String, String>,
}

impl NodeTokens {
    /// Reads `TOKEN NODE` lines (`#` starts a comment).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut f = line.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some(t), Some(n), None) if t.len() >= 16 => {
                    tokens.insert(t.to_string(), n.to_string());
                }
                (Some(_), Some(_), None) => {
                    return Err(format!(
                        "line {}: a token needs 16 characters or more",
                        i + 1
                    ))
                }
                _ => return Err(format!("line {}: expected `TOKEN NODE`", i + 1)),
            }
        }
        Ok(NodeTokens { tokens })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Whether `token` may speak for `node`: `None` if the token is not one of these.
    pub fn allows(&self, token: &str, node: &str) -> Option<bool> {
        self.tokens.get(token).map(|n| n == "*" || n == node)
    }
}

/// A boxed future, as [`NodeAuth`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Decides whether a bearer token may speak for a node.
pub trait NodeAuth: Send + Sync + 'static {
    /// `Ok` if `token` admits `node`; else why not (logged, and told to the caller).
    fn admit<'a>(&'a self, token: &'a str, node: &'a str) -> AuthFuture<'a>;
}

impl NodeAuth for NodeTokens {
    fn admit<'a>(&'a self, token: &'a str, node: &'a str) -> AuthFuture<'a> {
        let verdict = match self.allows(token, node) {
            Some(true) => Ok(()),
            Some(false) => Err(format!("the token does not admit node {node:?}")),
            None => Err("unknown token".to_string()),
        };
        Box::pin(std::future::ready(verdict))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRequest {
    pub identity: String,
    pub node: String,
    pub csr: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignResponse {
    pub certificate_chain: String,
    pub trust_bundle: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What the CA server needs.
pub struct CaServer {
    pub ca: ArcSwap<CertificateAuthority>,
    pub mesh: Arc<ArcSwap<MeshSnapshot>>,
    /// Who may speak for which node.
    pub auth: Arc<dyn NodeAuth>,
    pub ttl: Duration,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn refuse(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

impl CaServer {
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match (req.method().as_str(), req.uri().path()) {
            ("GET", "/v1/trust-bundle") => {
                let mut r = Response::new(Full::new(Bytes::from(
                    self.ca.load().bundle_pem().to_string(),
                )));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-pem-file"),
                );
                r
            }
            ("POST", "/v1/certificates") => self.sign(req, peer).await,
            _ => refuse(StatusCode::NOT_FOUND, "no such API".into()),
        }
    }

    async fn sign(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request: {e}"),
                )
            }
        };
        let sr: SignRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
        };
        let verdict = match &token {
            Some(t) => self.auth.admit(t, &sr.node).await,
            None => Err("no bearer token".to_string()),
        };
        if let Err(why) = verdict {
            tracing::warn!(node = %sr.node, %peer, reason = %why, "certificate request refused: the token does not speak for the node");
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("node {:?} not admitted: {why}", sr.node),
            );
        }
        let ca = self.ca.load();
        let Some(identity) = Identity::parse(&sr.identity) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{:?} is not spiffe://TD/ns/NS/sa/SA", sr.identity),
            );
        };
        let mesh = self.mesh.load();
        if identity.trust_domain != ca.trust_domain()
            || !mesh.hosts(&sr.node, &identity.namespace, &identity.service_account)
        {
            tracing::warn!(node = %sr.node, %identity, "certificate refused: no such workload on the node");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("node {:?} runs no meshed workload of {identity}", sr.node),
            );
        }
        match ca.sign(&sr.csr, &identity, self.ttl) {
            Ok(issued) => {
                tracing::info!(node = %sr.node, %identity, "workload certificate issued");
                json(
                    StatusCode::OK,
                    serde_json::to_value(SignResponse {
                        certificate_chain: issued.chain_pem,
                        trust_bundle: ca.bundle_pem().to_string(),
                        expires_at: issued
                            .not_after
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                    })
                    .unwrap_or_default(),
                )
            }
            Err(e) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

/// Serves the CA API on `listener` until the task is dropped.
pub fn serve(
    server: Arc<CaServer>,
    listener: TcpListener,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // The server's own certificate, made again when the root changes.
    let acceptor_for = |ca: &CertificateAuthority| -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let (issued, key) = ca.issue_with_key(
            &controller_identity(ca.trust_domain()),
            Duration::from_secs(365 * 24 * 3600),
        )?;
        let ck = tls::certified_key(&issued.chain_pem, &key)?;
        let cfg = tls::server_config(
            Arc::new(rustls::sign::SingleCertAndKey::from(ck)),
            tls::roots(ca.bundle_pem())?,
            true,
            &[b"http/1.1"],
        )?;
        Ok(tokio_rustls::TlsAcceptor::from(cfg))
    };
    let first = server.ca.load_full();
    let mut current = (first.clone(), acceptor_for(&first)?);
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "CA accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ca = server.ca.load_full();
            if !Arc::ptr_eq(&ca, &current.0) {
                match acceptor_for(&ca) {
                    Ok(a) => current = (ca, a),
                    Err(e) => tracing::warn!(error = %e, "cannot renew the CA's own certificate"),
                }
            }
            let acceptor = current.1.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
                let svc = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    }))
}

/// A node proxy's client of the CA.
#[derive(Clone)]
pub struct CaClient {
    /// `HOST:PORT` (a name is resolved on every call).
    pub addr: String,
    pub node: String,
    /// The file holding the token: read on every call, as a projected service-account
    /// token is replaced before it expires.
    pub token_file: PathBuf,
    pub trust_domain: String,
    /// Roots that vouch for the CA server (the bootstrap root, then the trust bundle).
    pub roots: Arc<ArcSwap<rustls::RootCertStore>>,
}

impl CaClient {
    async fn call(&self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let cfg = tls::client_config(
            None,
            self.roots.load_full(),
            &controller_identity(&self.trust_domain),
            &[b"http/1.1"],
        )?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting to the CA at {} timed out", self.addr))??;
        let name = rustls::pki_types::ServerName::try_from("gatehouse-controller")?.to_owned();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .map_err(|_| anyhow::anyhow!("the CA at {} did not answer", self.addr))??;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 1024 * 1024)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the CA's answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// Asks the CA to sign `csr_pem` for `identity`.
    pub async fn sign(&self, identity: &Identity, csr_pem: &str) -> anyhow::Result<SignResponse> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.token_file.display()))?;
        let body = serde_json::to_vec(&SignRequest {
            identity: identity.uri(),
            node: self.node.clone(),
            csr: csr_pem.to_string(),
        })?;
        let req = Request::post("/v1/certificates")
            .header(http::header::HOST, "gatehouse-controller")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let (status, body) = self.call(req).await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("the CA refused a certificate for {identity}: {status}: {msg}");
        }
        let resp: SignResponse = serde_json::from_slice(&body)?;
        // Later calls trust what the CA's bundle holds.
        if let Ok(r) = tls::roots(&resp.trust_bundle) {
            self.roots.store(r);
        }
        Ok(resp)
    }
}
