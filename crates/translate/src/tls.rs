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

/// Keys parsed before, by Secret, with a hash of the PEM they came from: translations
/// run again and again over mostly unchanged Secrets, and parsing (and checking) a key
/// costs far more than hashing its PEM.
static PARSED: std::sync::LazyLock<std::sync::Mutex<ParsedKeys>> =
    std::sync::LazyLock::new(Default::default);

/// Parsed keys by (namespace, name), with the hash of their PEM.
type ParsedKeys = HashMap<(String, String), (u64, Arc<CertifiedKey>)>;

fn pem_hash(secret: &StoredObject) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Object::Secret(s) = &secret.object {
        for k in ["tls.crt", "tls.key"] {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| &b.0)
                .hash(&mut h);
        }
    }
    h.finish()
}

/// `certified_key`, from the cache when the Secret's PEM has not changed.
pub fn cached_key(secret: &StoredObject) -> Result<Arc<CertifiedKey>, ConfigError> {
    let key = (secret.namespace().to_string(), secret.name().to_string());
    let hash = pem_hash(secret);
    if let Some((h, k)) = PARSED.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if *h == hash {
            return Ok(k.clone());
        }
    }
    let parsed = certified_key(secret)?;
    PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (hash, parsed.clone()));
    Ok(parsed)
}

/// The TLS Secret `namespace/name`'s key, if it exists and is valid.
pub fn cert_of(store: &ObjectStore, namespace: &str, name: &str) -> Option<Arc<CertifiedKey>> {
    let key = gatehouse_model::ObjectKey {
        kind: "Secret",
        namespace: Some(namespace.to_string()),
        name: name.to_string(),
    };
    let o = store.get(&key)?;
    match &o.object {
        Object::Secret(s) if s.type_.as_deref() == Some("kubernetes.io/tls") => cached_key(o).ok(),
        _ => None,
    }
}

/// Parses every Secret of type `kubernetes.io/tls`, referenced or not, so a broken
/// certificate is caught when it is written rather than when a route first uses it.
/// Returns the good ones by (namespace, name). Keys already parsed come from a cache,
/// which forgets Secrets that are gone.
pub fn load_certs(
    store: &ObjectStore,
    errors: &mut Vec<ConfigError>,
) -> HashMap<(String, String), Arc<CertifiedKey>> {
    let mut out = HashMap::new();
    for o in store.of_kind("Secret") {
        if let Object::Secret(s) = &o.object {
            if s.type_.as_deref() == Some("kubernetes.io/tls") {
                match cached_key(o) {
                    Ok(k) => {
                        out.insert((o.namespace().to_string(), o.name().to_string()), k);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k, _| out.contains_key(k));
    out
}
