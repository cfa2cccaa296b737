//! TLS material: `kubernetes.io/tls` Secrets parsed into rustls keys, and the SNI table
//! that picks a certificate by server name (exact, then wildcard, then default).

use crate::hosts::{HostTable, WildcardMode};
use gatehouse_model::{ConfigError, Object, ObjectStore, StoredObject};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Certificates of one bound TLS port, by server name.
#[derive(Debug, Clone)]
pub struct SniTable {
    pub certs: HostTable<Arc<CertifiedKey>>,
    pub default: Option<Arc<CertifiedKey>>,
}

impl SniTable {
    pub fn new() -> Self {
        SniTable {
            certs: HostTable::new(WildcardMode::MultiLabel),
            default: None,
        }
    }

    /// The certificate for `server_name` (the default one when no SNI or no match).
    pub fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        server_name
            .and_then(|n| self.certs.lookup(n))
            .or(self.default.as_ref())
            .cloned()
    }
}

impl Default for SniTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a TLS Secret into a rustls key; the error names the offending data field.
pub fn certified_key(secret: &StoredObject) -> Result<Arc<CertifiedKey>, ConfigError> {
    let Object::Secret(s) = &secret.object else {
        return Err(secret.error("", "not a Secret"));
    };
    let data = s.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    // Point at the field the manifest used: stringData (merged into data) or data.
    let in_string_data = secret
        .origin
        .as_ref()
        .is_some_and(|o| o.text.lines().any(|l| l.starts_with("stringData:")));
    let base = if in_string_data { "stringData" } else { "data" };
    let crt_field = format!("{base}[tls.crt]");
    let key_field = format!("{base}[tls.key]");
    let cert_pem = get("tls.crt").ok_or_else(|| secret.error(base, "missing tls.crt"))?;
    let key_pem = get("tls.key").ok_or_else(|| secret.error(base, "missing tls.key"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| secret.error(&crt_field, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(secret.error(&crt_field, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| secret.error(&key_field, format!("no usable private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| secret.error(&key_field, format!("unsupported key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| secret.error(&key_field, format!("does not match tls.crt: {e}")))?;
    Ok(Arc::new(ck))
}

/// Parses every Secret of type `kubernetes.io/tls`, referenced or not, so a broken
/// certificate is caught when it is written rather than when a route first uses it.
/// Returns the good ones by (namespace, name).
pub fn load_certs(
    store: &ObjectStore,
    errors: &mut Vec<ConfigError>,
) -> HashMap<(String, String), Arc<CertifiedKey>> {
    let mut out = HashMap::new();
    for o in store.of_kind("Secret") {
        if let Object::Secret(s) = &o.object {
            if s.type_.as_deref() == Some("kubernetes.io/tls") {
                match certified_key(o) {
                    Ok(k) => {
                        out.insert((o.namespace().to_string(), o.name().to_string()), k);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    out
}
