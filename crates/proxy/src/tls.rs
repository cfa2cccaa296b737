//! Downstream TLS: a rustls server config per TLS port whose certificate resolver reads
//! the current Snapshot, so certificate changes apply without rebinding.

use crate::dataplane::Active;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug)]
struct SnapshotResolver {
    state: Arc<ArcSwap<Active>>,
    addr: SocketAddr,
}

impl ResolvesServerCert for SnapshotResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let active = self.state.load();
        let port = active.snapshot.port(self.addr)?;
        port.tls.as_ref()?.resolve(hello.server_name())
    }
}

/// TLS 1.2 and 1.3 with aws-lc-rs's default (modern, AEAD-only) cipher suites, ALPN h2
/// and http/1.1.
pub fn server_config(
    state: Arc<ArcSwap<Active>>,
    addr: SocketAddr,
) -> Result<ServerConfig, rustls::Error> {
    // AES-128-GCM-SHA256 first, and the server's order over the client's: as strong in
    // practice as AES-256-GCM-SHA384, and its SHA-256 key schedule costs about half as
    // much per handshake (the SHA-384 HKDF was a fifth of a handshake's CPU).
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    let provider = Arc::new(provider);
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SnapshotResolver { state, addr }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    // One resumption ticket per handshake is enough for a client's next connection.
    cfg.send_tls13_tickets = 1;
    // Stateless tickets (sealed with a rotating key), as nginx's: any number of clients
    // can resume, not only the last few hundred in a session cache.
    if let Ok(t) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        cfg.ticketer = t;
    }
    Ok(cfg)
}
