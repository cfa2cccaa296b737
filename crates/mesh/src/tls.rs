//! Mutual TLS between mesh proxies: client and server configurations that present a
//! workload's certificate, trust only the mesh's roots, and check identities by SPIFFE
//! ID rather than by host name.

use crate::identity::{spiffe_id_of, Identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::{Arc, LazyLock};

/// ALPN of mesh tunnels (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

/// The crypto provider mesh TLS uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM text")]
    NoCertificate,
    #[error("bad key: {0}")]
    Key(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its key, ready to present.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let signer = PROVIDER
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The roots of a PEM trust bundle.
pub fn roots(bundle_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).filter_map(Result::ok) {
        store.add(c)?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(Arc::new(store))
}

/// The peer's identity, from the first certificate it presented.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    let leaf = certs?.first()?;
    Identity::parse(&spiffe_id_of(leaf)?)
}

/// Checks a server's chain against the mesh roots, and its SPIFFE ID against the one
/// expected (the destination workload's), whatever the server name.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            PROVIDER.signature_verification_algorithms.all,
        )?;
        match spiffe_id_of(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(rustls::Error::General(format!(
                "the peer is {id}, not {}",
                self.expected
            ))),
            None => Err(rustls::Error::General("the peer has no SPIFFE ID".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &PROVIDER.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &PROVIDER.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        PROVIDER
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that presents `ours` (None: no client certificate) and
/// accepts only a server holding identity `expected` under `roots`.
pub fn client_config(
    ours: Option<Arc<CertifiedKey>>,
    roots: Arc<RootCertStore>,
    expected: &Identity,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots,
            expected: expected.uri(),
        }));
    let mut cfg = match ours {
        Some(ck) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)))
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A server configuration that picks its certificate with `resolver` and requires
/// (`optional_client`: accepts) a client certificate under `roots`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    roots: Arc<RootCertStore>,
    optional_client: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    if optional_client {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}
