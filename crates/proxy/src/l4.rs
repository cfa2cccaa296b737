//! L4 connections: TCPRoute listeners copy bytes to a backend; TLS passthrough
//! listeners read the ClientHello (without terminating TLS), pick the backend by its
//! SNI, replay what they read and then copy bytes both ways.

use crate::affinity;
use crate::dataplane::DataPlane;
use gatehouse_translate::cluster::Refused;
use gatehouse_translate::{BackendSet, BackendTarget, L4Routes};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest ClientHello read while looking for the SNI.
const MAX_HELLO: usize = 16 * 1024;
/// How long an upstream connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection on an L4 port.
pub async fn serve(dp: Arc<DataPlane>, mut stream: TcpStream, peer: SocketAddr, addr: SocketAddr) {
    let active = dp.current();
    let Some(routes) = active.snapshot.port(addr).and_then(|p| p.l4.clone()) else {
        return;
    };
    drop(active);
    let (backends, hello) = match &routes {
        L4Routes::Tcp(set) => (set.clone(), Vec::new()),
        L4Routes::Tls(table) => {
            let read = tokio::time::timeout(dp.cfg.header_read_timeout, client_hello(&mut stream));
            let (sni, hello) = match read.await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    dp.metrics
                        .counters
                        .tls_handshake_errors_total
                        .fetch_add(1, Relaxed);
                    tracing::debug!(%peer, error = %e, "no usable ClientHello");
                    return;
                }
                Err(_) => {
                    dp.metrics
                        .counters
                        .tls_handshake_errors_total
                        .fetch_add(1, Relaxed);
                    return;
                }
            };
            let found = sni
                .as_deref()
                .and_then(|n| table.lookup(n))
                .or_else(|| table.lookup(""));
            match found {
                Some(set) => (set.clone(), hello),
                None => {
                    tracing::debug!(%peer, ?sni, "no TLSRoute for this server name");
                    return;
                }
            }
        }
    };
    if let Err(e) = forward(&backends, stream, peer, hello).await {
        dp.metrics
            .counters
            .upstream_errors_total
            .fetch_add(1, Relaxed);
        tracing::debug!(%peer, error = %e, "L4 connection ended");
    }
}

/// Connects to a backend of `set` and copies bytes both ways (after sending `first`).
async fn forward(
    set: &BackendSet,
    mut down: TcpStream,
    peer: std::net::SocketAddr,
    first: Vec<u8>,
) -> std::io::Result<()> {
    let cluster = match set.pick() {
        Some(BackendTarget::Cluster(c)) => c,
        Some(BackendTarget::Invalid { reason, .. }) => {
            return Err(std::io::Error::other(reason.clone()));
        }
        None => return Err(std::io::Error::other("no backend with a non-zero weight")),
    };
    // Connect failures are retried on other endpoints when the policy says so.
    let mut affinity = affinity::of_request(&cluster.policy, &http::HeaderMap::new(), peer);
    let retries = match &cluster.policy.retry {
        Some(r) if r.on.connect_failure => r.attempts,
        _ => 0,
    };
    let mut attempt = 0;
    let (admitted, mut up) = loop {
        let admitted = cluster.admit(&affinity).map_err(|r| match r {
            Refused::NoEndpoints => {
                std::io::Error::other(format!("no ready endpoints for {}", cluster.name))
            }
            Refused::MaxRequests(m) => {
                std::io::Error::other(format!("circuit breaker: {m} connections in flight"))
            }
        })?;
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(admitted.addr))
            .await
            .map_err(|_| std::io::Error::other("upstream connect timed out"))
            .and_then(|r| r);
        admitted.guard.outcome(connected.is_ok());
        match connected {
            Ok(up) => break (admitted, up),
            Err(_) if attempt < retries => {
                affinity.avoid = Some(admitted.addr);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    if !first.is_empty() {
        up.write_all(&first).await?;
    }
    tokio::io::copy_bidirectional(&mut down, &mut up).await?;
    drop(admitted);
    Ok(())
}

/// Reads the TLS ClientHello and returns its server name and every byte read.
async fn client_hello(stream: &mut TcpStream) -> std::io::Result<(Option<String>, Vec<u8>)> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut read = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the ClientHello",
            ));
        }
        read.extend_from_slice(&buf[..n]);
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            acceptor.read_tls(&mut chunk)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Ok((sni, read));
            }
            Ok(None) if read.len() < MAX_HELLO => continue,
            Ok(None) => return Err(std::io::Error::other("ClientHello too large")),
            Err((e, _)) => return Err(std::io::Error::other(e)),
        }
    }
}
