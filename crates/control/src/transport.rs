//! TLS for the stream between proxies and the controller. The controller presents a
//! certificate from PEM files (from cert-manager, say); proxies check it against a CA
//! bundle and the host name in the URL, so their bearer tokens travel encrypted. With a
//! client CA (the mesh CA's roots), the controller also asks proxies for a certificate
//! (mutual TLS): one that the CA vouches for names the proxy by its SPIFFE ID, which
//! may admit it without a token. Without TLS files the stream is plaintext (for a
//! trusted network or a laptop).

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A PEM certificate chain and its key; errors name the file.
fn chain_and_key(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{}: no PEM private key", key.display()))?;
    Ok((chain, key))
}

/// The roots of a PEM CA bundle; errors name the file.
fn roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("{}: not PEM certificates", ca.display()))?)
            .with_context(|| format!("{}: a certificate rustls refuses", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{}: no certificate", ca.display());
    }
    Ok(roots)
}

/// The controller's TLS: its certificate chain and key, and the roots client
/// certificates are checked against, if any.
#[derive(Clone)]
pub struct ServerTls(tokio_rustls::TlsAcceptor);

impl ServerTls {
    /// Loads a PEM certificate chain and key, and (for mutual TLS) a client CA bundle:
    /// proxies may then present a certificate it vouches for (and those without one
    /// need a token); errors name the file.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Self> {
        let (chain, key) = chain_and_key(cert, key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider(),
                )
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("{}: cannot check client certificates", ca.display()))?,
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .context("the certificate and key do not go together")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// A connection a proxy made: plain, or TLS.
pub enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Who is at the other end of a connection: its address, and the SPIFFE ID of the
/// client certificate its handshake verified.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    pub identity: Option<String>,
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            ServerIo::Plain(t) => PeerInfo {
                remote_addr: t.peer_addr().ok(),
                identity: None,
            },
            ServerIo::Tls(t) => {
                let (tcp, session) = t.get_ref();
                PeerInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    identity: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|leaf| gatehouse_model::spiffe::spiffe_id_of(leaf)),
                }
            }
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(t) => Pin::new(t).poll_read(cx, buf),
            ServerIo::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(t) => Pin::new(t).poll_write(cx, buf),
            ServerIo::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(t) => Pin::new(t).poll_flush(cx),
            ServerIo::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(t) => Pin::new(t).poll_shutdown(cx),
            ServerIo::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections accepted on `listener`, after their TLS handshake when `tls` is
/// set (each handshake runs on its own, with a 10 s limit, so a slow one holds up no
/// other).
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<ServerIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                if tx.send(Ok(ServerIo::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), tls.0.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(ServerIo::Tls(Box::new(s)))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "control TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "control TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A proxy's client certificate for mutual TLS: PEM chain and key files (read again on
/// every connection, so a renewed certificate is used).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl ClientCert {
    /// The certificate given by `--controller-cert` and `--controller-key`, if both are.
    pub fn of(cert: Option<std::path::PathBuf>, key: Option<std::path::PathBuf>) -> Option<Self> {
        Some(ClientCert {
            cert: cert?,
            key: key?,
        })
    }
}

/// A channel to the controller at `url`: `http://` as is, `https://` with TLS checked
/// against the CA bundle in `ca` (PEM), presenting `client` when given.
pub async fn connect(
    url: &str,
    ca: Option<&Path>,
    client: Option<&ClientCert>,
) -> anyhow::Result<Channel> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("{url:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let plain = format!("http://{}:{port}", uri.host().unwrap_or_default());
    let endpoint = Endpoint::from_shared(plain)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if !https {
        return Ok(endpoint.connect().await?);
    }
    let ca = ca.ok_or_else(|| anyhow!("{url}: an https controller needs --controller-ca"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    let mut config = match client {
        Some(c) => {
            let (chain, key) = chain_and_key(&c.cert, &c.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not go together")?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name =
        ServerName::try_from(host.clone()).map_err(|_| anyhow!("{host:?} is not a server name"))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}
