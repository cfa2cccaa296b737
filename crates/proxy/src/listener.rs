//! Accept loops: one per bound address. HTTP/1.1 connections (plain, or TLS without
//! ALPN h2) start on the fast path ([`crate::fast_h1`]), which hands anything else to
//! hyper's automatic HTTP/1.1 / HTTP/2 connection (h2c prior knowledge, or ALPN h2),
//! with upgrades; connections are told to finish gracefully when the data plane shuts
//! down.

use crate::body::RequestBody;
use crate::dataplane::DataPlane;
use crate::handler::{self, ConnInfo};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

pub struct ListenerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ListenerHandle {
    /// Stops accepting; connections already accepted carry on.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops accepting and waits until the socket is closed, so the address can be
    /// bound again.
    pub async fn close(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Binds a listening socket (SO_REUSEADDR, so a restart does not wait for TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The TLS acceptor for a TLS port (certificates come from the live Snapshot).
pub fn acceptor(dp: &DataPlane, addr: SocketAddr) -> Result<TlsAcceptor, rustls::Error> {
    Ok(TlsAcceptor::from(Arc::new(crate::tls::server_config(
        dp.state.clone(),
        addr,
    )?)))
}

/// How a listener serves its connections.
#[derive(Clone)]
pub enum Mode {
    Http,
    Https(TlsAcceptor),
    /// TCP or TLS passthrough (see [`crate::l4`]).
    L4,
}

/// Starts the accept loop of `listener`. Connections are served on the data plane's
/// worker threads if it has them (each on the least loaded), else on this runtime.
pub fn spawn(
    dp: Arc<DataPlane>,
    listener: TcpListener,
    addr: SocketAddr,
    mode: Mode,
) -> ListenerHandle {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut shutdown = dp.shutdown.subscribe();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = shutdown.changed() => break,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => hand_out(&dp, stream, peer, addr, &mode),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%addr, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
    });
    ListenerHandle {
        stop: Some(stop_tx),
        task: Some(task),
    }
}

/// Starts serving an accepted connection, on a worker thread if there are any.
fn hand_out(
    dp: &Arc<DataPlane>,
    stream: TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
    mode: &Mode,
) {
    let Some(workers) = &dp.workers else {
        tokio::spawn(serve_connection(
            dp.clone(),
            stream,
            peer,
            addr,
            mode.clone(),
        ));
        return;
    };
    // The socket moves to the worker's reactor.
    let std = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot hand the connection to a worker");
            return;
        }
    };
    let (rt, assigned) = workers.assign();
    let (dp, mode) = (dp.clone(), mode.clone());
    rt.spawn(async move {
        let _assigned = assigned;
        match TcpStream::from_std(std) {
            Ok(stream) => serve_connection(dp, stream, peer, addr, mode).await,
            Err(e) => tracing::debug!(%peer, error = %e, "cannot register the connection"),
        }
    });
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_connection(
    dp: Arc<DataPlane>,
    mut stream: TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
    mode: Mode,
) {
    let _guard = dp.conns.enter();
    let counters = &dp.metrics.counters;
    counters.connections_total.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    // A load balancer's connection names the client first.
    let from_balancer = dp
        .cfg
        .proxy_protocol
        .as_ref()
        .is_some_and(|l| l.check(peer.ip()) == gatehouse_security::ipacl::Access::Allow);
    let peer = match from_balancer {
        false => peer,
        true => {
            let wait = dp.cfg.header_read_timeout;
            match crate::proxy_protocol::read(&mut stream, peer, wait).await {
                Ok(client) => client,
                Err(why) => {
                    tracing::debug!(%peer, why, "connection without a valid PROXY header");
                    return;
                }
            }
        }
    };
    if crate::blocks::refuse_connection(&dp, peer, addr) {
        drop(_guard);
        crate::blocks::hold_and_reset(&dp, stream).await;
        return;
    }
    let Ok(_admitted) = crate::connlimit::admit(&dp, peer, addr) else {
        return;
    };
    counters.connections_active.fetch_add(1, Relaxed);
    match mode {
        Mode::L4 => crate::l4::serve(dp.clone(), stream, peer, addr).await,
        Mode::Https(acceptor) => {
            match tokio::time::timeout(dp.cfg.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let tls13 = tls.get_ref().1.protocol_version()
                        == Some(rustls::ProtocolVersion::TLSv1_3);
                    match tls13 {
                        true => &counters.tls13_handshakes_total,
                        false => &counters.tls12_handshakes_total,
                    }
                    .fetch_add(1, Relaxed);
                    let info = ConnInfo {
                        peer,
                        listener: addr,
                        https: true,
                        sni,
                    };
                    match h2 {
                        true => {
                            let pre = bytes::BytesMut::new();
                            crate::fast_h2::serve(dp.clone(), tls, info, pre).await
                        }
                        false => crate::fast_h1::serve(dp.clone(), tls, info).await,
                    }
                }
                Ok(Err(e)) => {
                    counters.tls_handshake_errors_total.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    counters.tls_handshake_errors_total.fetch_add(1, Relaxed);
                }
            }
        }
        Mode::Http => {
            let info = ConnInfo {
                peer,
                listener: addr,
                https: false,
                sni: None,
            };
            crate::fast_h1::serve(dp.clone(), stream, info).await;
        }
    }
    counters.connections_active.fetch_sub(1, Relaxed);
}

pub(crate) async fn serve_http<I>(dp: &Arc<DataPlane>, io: TokioIo<I>, info: ConnInfo)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc_dp = dp.clone();
    let svc = service_fn(move |req| {
        let dp = svc_dp.clone();
        let info = info.clone();
        // Boxed: the handler's future is large, and hyper moves it into a task.
        let req = req.map(RequestBody::Hyper);
        let f = Box::pin(handler::handle(dp, info, req));
        async move { Ok::<_, Infallible>(f.await) }
    });
    let mut shutdown = dp.shutdown.subscribe();
    let conn = dp.server.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    if *shutdown.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Lifts the soft limit on open files to the hard limit, as nginx's
/// `worker_rlimit_nofile` does: every connection is a file, and a connection flood must
/// not leave legitimate clients unable to connect while the hard limit allows more.
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let from = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from, to = lim.rlim_max, "open files limit raised");
            }
        }
    }
}
