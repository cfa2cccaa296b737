//! Tunnels between mesh proxies, in the manner of Istio's HBONE: one mutual-TLS
//! HTTP/2 connection per (source identity, destination identity, destination proxy),
//! and one CONNECT stream on it per tunnelled TCP connection. The CONNECT target is the
//! destination workload's address and port; `Forwarded: for=` carries the caller's
//! address.

use crate::h2io::H2Stream;
use crate::identities::Identities;
use crate::identity::Identity;
use crate::tls;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// HTTP/2 windows: large, so one stream can fill a fast link.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const MAX_FRAME: u32 = 256 * 1024;
/// Streams one tunnel connection carries at once.
const MAX_STREAMS: u32 = 1000;
/// Tunnel sockets are read through a buffer this large: rustls takes one record
/// (16 KiB) at a time, and one read per record would multiply the system calls.
const READ_BUFFER: usize = 256 * 1024;
/// Encrypted bytes rustls may queue before they are written, so that one `writev`
/// carries many records.
const TLS_SEND_BUFFER: usize = 256 * 1024;

/// A tunnel's socket, read through a buffer.
pub type TunnelIo = tokio::io::BufReader<tokio::net::TcpStream>;

/// `tcp` made ready to carry a tunnel's TLS.
pub fn tunnel_io(tcp: tokio::net::TcpStream) -> TunnelIo {
    tokio::io::BufReader::with_capacity(READ_BUFFER, tcp)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Identity,
    destination: Identity,
    proxy: SocketAddr,
}

/// A refusal by the far end, with its status.
#[derive(Debug, thiserror::Error)]
#[error("the destination proxy answered {status}")]
pub struct Refused {
    pub status: http::StatusCode,
}

/// A pooled connection and the certificate it was dialled with.
struct Pooled {
    send: h2::client::SendRequest<Bytes>,
    cert: Arc<rustls::sign::CertifiedKey>,
}

/// One key's connection, once dialled; locked while it is dialled.
type Slot = Arc<tokio::sync::Mutex<Option<Pooled>>>;

/// Open tunnel connections, by key.
pub struct Pool {
    identities: Arc<Identities>,
    conns: Mutex<HashMap<Key, Slot>>,
    /// Marks the proxy's own sockets (SO_MARK), so capture rules let them pass.
    pub mark: Option<u32>,
    /// Tunnel connections opened so far.
    pub opened: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub fn new(identities: Arc<Identities>, mark: Option<u32>) -> Self {
        Pool {
            identities,
            conns: Mutex::new(HashMap::new()),
            mark,
            opened: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Opens a stream to `target` through the proxy at `proxy`, as `source`, to a
    /// proxy that must prove it is `destination`. A pooled connection dialled with a
    /// certificate since renewed is retired: new streams go on a new connection, and
    /// the old one closes once its streams end.
    pub async fn connect(
        &self,
        source: &Identity,
        destination: &Identity,
        proxy: SocketAddr,
        target: SocketAddr,
        caller: IpAddr,
    ) -> anyhow::Result<H2Stream> {
        let key = Key {
            source: source.clone(),
            destination: destination.clone(),
            proxy,
        };
        let slot = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.entry(key.clone()).or_default().clone()
        };
        // Twice at most: a pooled connection may turn out closed.
        for attempt in 0..2 {
            let cert = self.identities.get(source).await?;
            let mut send = {
                let mut s = slot.lock().await;
                match s.as_ref() {
                    Some(p) if attempt == 0 && Arc::ptr_eq(&p.cert, &cert) => p.send.clone(),
                    _ => {
                        let send = self.dial(&key, cert.clone()).await?;
                        *s = Some(Pooled {
                            send: send.clone(),
                            cert,
                        });
                        send
                    }
                }
            };
            let ready = match send.ready().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "pooled tunnel closed; dialling again");
                    continue;
                }
            };
            send = ready;
            let req = http::Request::builder()
                .method(http::Method::CONNECT)
                .uri(target.to_string())
                .header("forwarded", format!("for=\"{}\"", forwarded(caller)))
                .body(())?;
            let (resp, stream) = match send.send_request(req, false) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "pooled tunnel refused a stream; dialling again");
                    continue;
                }
            };
            let resp = resp.await?;
            if resp.status() != http::StatusCode::OK {
                return Err(Refused {
                    status: resp.status(),
                }
                .into());
            }
            return Ok(H2Stream::new(stream, resp.into_body()));
        }
        anyhow::bail!("cannot open a tunnel stream to {proxy}")
    }

    async fn dial(
        &self,
        key: &Key,
        cert: Arc<rustls::sign::CertifiedKey>,
    ) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
        let cfg = tls::client_config(
            Some(cert),
            self.identities.roots.load_full(),
            &key.destination,
            &[tls::ALPN_H2],
        )?;
        let sock = match key.proxy {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if let Some(mark) = self.mark {
            crate::capture::set_mark(&sock, mark)?;
        }
        sock.set_nodelay(true)?;
        let tcp = tokio::time::timeout(Duration::from_secs(5), sock.connect(key.proxy))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {} timed out", key.proxy))??;
        let name =
            rustls::pki_types::ServerName::try_from(key.destination.server_name())?.to_owned();
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tunnel_io(tcp))
            .await?;
        tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buffer_size(1024 * 1024)
            .handshake::<_, Bytes>(tls)
            .await?;
        let proxy = key.proxy;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%proxy, error = %e, "tunnel connection ended");
            }
        });
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(source = %key.source, destination = %key.destination, proxy = %key.proxy, "tunnel connection opened");
        Ok(send)
    }
}

fn forwarded(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The caller address a `Forwarded: for=` header names.
pub fn forwarded_for(headers: &http::HeaderMap) -> Option<IpAddr> {
    let v = headers.get("forwarded")?.to_str().ok()?;
    v.split([';', ','])
        .filter_map(|p| p.trim().strip_prefix("for="))
        .map(|f| {
            f.trim_matches('"')
                .trim_start_matches('[')
                .trim_end_matches(']')
        })
        .find_map(|f| f.parse().ok())
}

/// An accepted CONNECT stream: who asked, as whom it reached us, where to.
pub struct Inbound {
    /// The caller's proven identity.
    pub peer: Identity,
    /// The identity our certificate gave (the destination workload's).
    pub local: Identity,
    pub target: SocketAddr,
    /// The caller's address (`Forwarded: for=`, else the peer proxy's).
    pub caller: IpAddr,
    pub respond: h2::server::SendResponse<Bytes>,
    pub body: h2::RecvStream,
}

impl Inbound {
    /// Refuses the stream with `status`.
    pub fn refuse(mut self, status: http::StatusCode) {
        refuse(&mut self.respond, status);
    }

    /// Accepts the stream: the byte stream to copy to the workload.
    pub fn accept(mut self) -> anyhow::Result<H2Stream> {
        let send = self.respond.send_response(http::Response::new(()), false)?;
        Ok(H2Stream::new(send, self.body))
    }
}

fn refuse(respond: &mut h2::server::SendResponse<Bytes>, status: http::StatusCode) {
    let mut r = http::Response::new(());
    *r.status_mut() = status;
    let _ = respond.send_response(r, true);
}

/// Serves one accepted TLS connection's CONNECT streams, handing each to `handle`.
pub async fn serve_connection<F>(
    mut tls: tokio_rustls::server::TlsStream<TunnelIo>,
    trust_domain: &str,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(Inbound) + Send + Sync + 'static,
{
    tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
    let (io, state) = tls.get_ref();
    let peer_addr = io.get_ref().peer_addr()?;
    let peer = tls::peer_identity(state.peer_certificates())
        .ok_or_else(|| anyhow::anyhow!("{peer_addr}: the peer has no SPIFFE identity"))?;
    let local = state
        .server_name()
        .and_then(|n| Identity::from_server_name(trust_domain, n))
        .ok_or_else(|| anyhow::anyhow!("{peer_addr}: no identity asked for"))?;
    let mut conn = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buffer_size(1024 * 1024)
        .handshake::<_, Bytes>(tls)
        .await?;
    while let Some(next) = conn.accept().await {
        let (req, mut respond) = next?;
        let target = req
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
            .filter(|_| req.method() == http::Method::CONNECT);
        let Some(target) = target else {
            refuse(&mut respond, http::StatusCode::BAD_REQUEST);
            continue;
        };
        handle(Inbound {
            peer: peer.clone(),
            local: local.clone(),
            target,
            caller: forwarded_for(req.headers()).unwrap_or(peer_addr.ip()),
            respond,
            body: req.into_body(),
        });
    }
    Ok(())
}
