//! The tunnel server's certificate choice: the client names the identity it expects
//! (as a TLS server name); the proxy presents that identity's certificate if one of
//! its workloads holds it, and fails the handshake otherwise.

use crate::identities::Identities;
use crate::identity::Identity;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct Resolver {
    pub identities: Arc<Identities>,
    pub trust_domain: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let id = Identity::from_server_name(&self.trust_domain, hello.server_name()?)?;
        self.identities.current(&id)
    }
}
