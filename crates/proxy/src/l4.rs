//! L4 connections: TCPRoute listeners copy bytes to a backend; TLS passthrough
//! listeners read the ClientHello (without terminating TLS), pick the backend by its
//! SNI, replay what they read and then copy bytes both ways. Every connection ends as a
//! flow record ([`crate::l4_flows`]).

use crate::affinity;
use crate::dataplane::DataPlane;
use crate::l4_flows::{L4Flow, Verdict};
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

/// Serves one connection on an L4 port, and records its flow.
pub async fn serve(dp: Arc<DataPlane>, mut stream: TcpStream, peer: SocketAddr, addr: SocketAddr) {
    let started = std::time::Instant::now();
    let active = dp.current();
    let Some(routes) = active.snapshot.port(addr).and_then(|p| p.l4.clone()) else {
        return;
    };
    drop(active);
    let mut flow = L4Flow {
        time_ms: 0,
        client: peer,
        listener: addr,
        server_name: None,
        cluster: None,
        endpoint: None,
        verdict: Verdict::Forwarded,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0,
    };
    let picked = match &routes {
        L4Routes::Tcp(set) => Ok((set.clone(), Vec::new())),
        L4Routes::Tls(table) => {
            let read = tokio::time::timeout(dp.cfg.header_read_timeout, client_hello(&mut stream));
            match read.await {
                Ok(Ok((sni, hello))) => {
                    let found = sni
                        .as_deref()
                        .and_then(|n| table.lookup(n))
                        .or_else(|| table.lookup(""));
                    flow.server_name = sni;
                    match found {
                        Some(set) => Ok((set.clone(), hello)),
                        None => {
                            tracing::debug!(%peer, sni = ?flow.server_name, "no TLSRoute for this server name");
                            Err(Verdict::NoRoute)
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "no usable ClientHello");
                    Err(Verdict::BadClientHello)
                }
                Err(_) => Err(Verdict::BadClientHello),
            }
        }
    };
    match picked {
        Ok((backends, hello)) => {
            if let Err(e) = forward(&backends, stream, peer, hello, &mut flow).await {
                dp.metrics
                    .counters
                    .upstream_errors_total
                    .fetch_add(1, Relaxed);
                tracing::debug!(%peer, error = %e, "L4 connection ended");
            }
        }
        Err(verdict) => {
            if verdict == Verdict::BadClientHello {
                dp.metrics
                    .counters
                    .tls_handshake_errors_total
                    .fetch_add(1, Relaxed);
            }
            flow.verdict = verdict;
        }
    }
    flow.time_ms = crate::security_log::now_ms();
    flow.duration_ms = started.elapsed().as_millis() as u64;
    dp.metrics.l4.record(flow);
}

/// Connects to a backend of `set` and copies bytes both ways (after sending `first`);
/// `flow` gets the backend, the bytes and how it ended.
async fn forward(
    set: &BackendSet,
    mut down: TcpStream,
    peer: std::net::SocketAddr,
    first: Vec<u8>,
    flow: &mut L4Flow,
) -> std::io::Result<()> {
    let fail = |flow: &mut L4Flow, verdict, e: std::io::Error| {
        flow.verdict = verdict;
        Err(e)
    };
    let cluster = match set.pick() {
        Some(BackendTarget::Cluster(c)) => c,
        Some(BackendTarget::Invalid { reason, .. }) => {
            return fail(
                flow,
                Verdict::InvalidBackend,
                std::io::Error::other(reason.clone()),
            );
        }
        None => {
            return fail(
                flow,
                Verdict::InvalidBackend,
                std::io::Error::other("no backend with a non-zero weight"),
            )
        }
    };
    flow.cluster = Some(cluster.name.clone());
    // Connect failures are retried on other endpoints when the policy says so.
    let mut affinity = affinity::of_request(&cluster.policy, &http::HeaderMap::new(), peer);
    let retries = match &cluster.policy.retry {
        Some(r) if r.on.connect_failure => r.attempts,
        _ => 0,
    };
    let mut attempt = 0;
    let (admitted, mut up) = loop {
        let admitted = match cluster.admit(&affinity) {
            Ok(a) => a,
            Err(Refused::NoEndpoints) => {
                let e = std::io::Error::other(format!("no ready endpoints for {}", cluster.name));
                return fail(flow, Verdict::NoEndpoints, e);
            }
            Err(Refused::MaxRequests(m)) => {
                let e =
                    std::io::Error::other(format!("circuit breaker: {m} connections in flight"));
                return fail(flow, Verdict::CircuitOpen, e);
            }
        };
        flow.endpoint = Some(admitted.addr);
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
            Err(e) => return fail(flow, Verdict::ConnectFailed, e),
        }
    };
    let _ = up.set_nodelay(true);
    let _ = down.set_nodelay(true);
    if !first.is_empty() {
        if let Err(e) = up.write_all(&first).await {
            return fail(flow, Verdict::Reset, e);
        }
        flow.bytes_in = first.len() as u64;
    }
    let copied = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    drop(admitted);
    match copied {
        Ok((to_up, to_down)) => {
            flow.bytes_in += to_up;
            flow.bytes_out = to_down;
            Ok(())
        }
        Err(e) => fail(flow, Verdict::Reset, e),
    }
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
