//! The mesh's built-in certificate authority: a root kept in a directory (made on first
//! start), which signs short-lived workload certificates whose only name is a SPIFFE ID
//! the caller was checked to hold. The trust bundle holds the signing root, the next
//! root of a rotation under way, and the roots it replaced, so a root can be rotated
//! without breaking live identities: a new root first joins the bundle, and signs only
//! once every proxy has had time to fetch that bundle (one certificate lifetime).

use crate::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The signing root's certificate, in the CA directory.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The signing root's private key, in the CA directory (mode 0600).
pub const ROOT_KEY: &str = "root-key.pem";
/// Roots replaced by a rotation, still trusted until they expire.
pub const PREVIOUS_ROOTS: &str = "previous-roots.pem";
/// The next root of a rotation under way: trusted now, signing from its promotion.
pub const NEXT_CERT: &str = "next-root-cert.pem";
pub const NEXT_KEY: &str = "next-root-key.pem";
/// When the next root joined the bundle (Unix seconds).
pub const NEXT_SINCE: &str = "next-root-since";

/// How long a root is valid.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before they are issued, for clocks a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// Root material from elsewhere (a Secret) that does not load.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("the certificate signing request is invalid: {0}")]
    BadRequest(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A signed certificate: the chain (leaf first) as PEM, and when it expires.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub not_after: SystemTime,
}

/// The CA: the signing root and the trust bundle.
pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    /// Every root to trust, PEM: the signing root first, then previous ones.
    bundle_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A root as stored: its certificate and key, the roots it replaced, and the next root
/// of a rotation under way, PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub previous_pem: String,
    pub next: Option<NextRoot>,
}

/// A root that joined the trust bundle and will sign once promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRoot {
    pub cert_pem: String,
    pub key_pem: String,
    /// When it joined the bundle (Unix seconds).
    pub since: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RootMaterial {
    /// A new self-signed root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let (cert_pem, key_pem) = new_root(trust_domain)?;
        Ok(RootMaterial {
            cert_pem,
            key_pem,
            ..RootMaterial::default()
        })
    }

    /// Starts a rotation: a new root joins the trust bundle now and signs once
    /// promoted. Refused while one is under way.
    pub fn stage(&mut self, trust_domain: &str) -> Result<(), CaError> {
        if let Some(n) = &self.next {
            return Err(CaError::Sign(format!(
                "a rotation is already under way (its root joined the bundle at {} Unix time)",
                n.since
            )));
        }
        let (cert_pem, key_pem) = new_root(trust_domain)?;
        self.next = Some(NextRoot {
            cert_pem,
            key_pem,
            since: unix_now(),
        });
        Ok(())
    }

    /// Starts a rotation ([`RootMaterial::stage`]); with `now`, the new root signs at once.
    pub fn rotate(&mut self, trust_domain: &str, now: bool) -> Result<(), CaError> {
        self.stage(trust_domain)?;
        if now {
            self.promote_if_due(Duration::ZERO);
        }
        Ok(())
    }

    /// Promotes the next root if it has been in the bundle for `after`: it signs from
    /// now on, and the root it replaces stays trusted (until it expires). True if it
    /// did.
    pub fn promote_if_due(&mut self, after: Duration) -> bool {
        match &self.next {
            Some(n) if n.since.saturating_add(after.as_secs()) <= unix_now() => {}
            _ => return false,
        }
        let Some(next) = self.next.take() else {
            return false;
        };
        // Expired roots leave the bundle as it is rewritten.
        let now = SystemTime::now();
        let mut previous = std::mem::take(&mut self.cert_pem);
        if !previous.ends_with('\n') {
            previous.push('\n');
        }
        for pem in split_pem(&self.previous_pem) {
            if pem_der(&pem)
                .and_then(|d| crate::identity::not_after(&d))
                .is_some_and(|t| t > now)
            {
                previous.push_str(&pem);
            }
        }
        self.previous_pem = previous;
        self.cert_pem = next.cert_pem;
        self.key_pem = next.key_pem;
        true
    }

    /// Reads the root in `dir`, if there is one.
    pub fn read_dir(dir: &Path) -> Result<Option<Self>, CaError> {
        let cert_path = dir.join(ROOT_CERT);
        if !cert_path.exists() && !dir.join(ROOT_KEY).exists() {
            return Ok(None);
        }
        let optional = |name: &str| {
            let p = dir.join(name);
            match p.exists() {
                true => read(&p).map(Some),
                false => Ok(None),
            }
        };
        let next = match (optional(NEXT_CERT)?, optional(NEXT_KEY)?) {
            (Some(cert_pem), Some(key_pem)) => {
                let since_path = dir.join(NEXT_SINCE);
                let since = read(&since_path)?
                    .trim()
                    .parse()
                    .map_err(|e| file_error(&since_path, e))?;
                Some(NextRoot {
                    cert_pem,
                    key_pem,
                    since,
                })
            }
            _ => None,
        };
        Ok(Some(RootMaterial {
            cert_pem: read(&cert_path)?,
            key_pem: read(&dir.join(ROOT_KEY))?,
            previous_pem: optional(PREVIOUS_ROOTS)?.unwrap_or_default(),
            next,
        }))
    }

    /// Writes the root to `dir` (keys mode 0600), each file replaced whole.
    pub fn write_dir(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let put = |name: &str, text: &str, private: bool| -> Result<(), CaError> {
            let tmp = dir.join(format!(".{name}.tmp"));
            match private {
                true => write_private(&tmp, text)?,
                false => std::fs::write(&tmp, text).map_err(|e| file_error(&tmp, e))?,
            }
            let path = dir.join(name);
            std::fs::rename(&tmp, &path).map_err(|e| file_error(&path, e))
        };
        // The bundle's new members first, the signing root last.
        match &self.next {
            Some(n) => {
                put(NEXT_KEY, &n.key_pem, true)?;
                put(NEXT_CERT, &n.cert_pem, false)?;
                put(NEXT_SINCE, &n.since.to_string(), false)?;
            }
            None => {
                for name in [NEXT_CERT, NEXT_KEY, NEXT_SINCE] {
                    let p = dir.join(name);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| file_error(&p, e))?;
                    }
                }
            }
        }
        put(PREVIOUS_ROOTS, &self.previous_pem, false)?;
        put(ROOT_KEY, &self.key_pem, true)?;
        put(ROOT_CERT, &self.cert_pem, false)
    }
}

fn new_root(trust_domain: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Gatehouse mesh");
    let now = SystemTime::now();
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "Gatehouse mesh root {trust_domain} {}",
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    );
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ROOT_VALIDITY).into();
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| file_error(path, e))
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| file_error(path, e))
}

impl CertificateAuthority {
    /// Loads the root from `dir`, making one (and the directory) if there is none.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        if RootMaterial::read_dir(dir)?.is_none() {
            RootMaterial::generate(trust_domain)?.write_dir(dir)?;
            tracing::info!(dir = %dir.display(), "made a new mesh root certificate");
        }
        Self::load(dir, trust_domain)
    }

    /// Loads the root (and previous and next roots) from `dir`.
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let material = RootMaterial::read_dir(dir)?.ok_or_else(|| {
            file_error(
                &dir.join(ROOT_CERT),
                "no such file (no root in this directory)",
            )
        })?;
        Self::from_dir_material(&material, dir, trust_domain)
    }

    /// The CA of a root read from `dir`, with errors naming its files.
    pub fn from_dir_material(
        m: &RootMaterial,
        dir: &Path,
        trust_domain: &str,
    ) -> Result<Self, CaError> {
        Self::from_material(
            m,
            trust_domain,
            &dir.join(ROOT_CERT).display().to_string(),
            &dir.join(ROOT_KEY).display().to_string(),
        )
    }

    /// The CA of a root: `cert_name` and `key_name` say where its parts came from, for
    /// errors.
    pub fn from_material(
        m: &RootMaterial,
        trust_domain: &str,
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, CaError> {
        let invalid = |what: &str, e: rcgen::Error| CaError::Invalid {
            what: what.to_string(),
            message: e.to_string(),
        };
        let key = KeyPair::from_pem(&m.key_pem).map_err(|e| invalid(key_name, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&m.cert_pem, key).map_err(|e| invalid(cert_name, e))?;
        let mut bundle_pem = String::new();
        let next = m.next.as_ref().map(|n| n.cert_pem.as_str());
        for part in [
            Some(m.cert_pem.as_str()),
            next,
            Some(m.previous_pem.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            bundle_pem.push_str(part);
            if !bundle_pem.is_empty() && !bundle_pem.ends_with('\n') {
                bundle_pem.push('\n');
            }
        }
        Ok(CertificateAuthority {
            trust_domain: trust_domain.into(),
            issuer,
            root_pem: m.cert_pem.clone(),
            bundle_pem,
        })
    }

    /// Starts a rotation of the root in `dir` (see [`RootMaterial::stage`]); with
    /// `now`, the new root signs at once (for a root that must go: proxies that have not
    /// fetched the new bundle cannot check new certificates until they renew theirs).
    pub fn rotate_root(dir: &Path, trust_domain: &str, now: bool) -> Result<(), CaError> {
        let mut m = RootMaterial::read_dir(dir)?.ok_or_else(|| {
            file_error(
                &dir.join(ROOT_CERT),
                "no such file (no root in this directory)",
            )
        })?;
        m.rotate(trust_domain, now)?;
        m.write_dir(dir)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The signing root, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Every root to trust, PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// Signs the public key of `csr_pem` (whose signature is checked) for `identity`,
    /// valid for `ttl`. Nothing else of the request is used.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        if identity.trust_domain != self.trust_domain {
            return Err(CaError::BadRequest(format!(
                "{identity} is not in trust domain {}",
                self.trust_domain
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        self.issue(&csr.public_key, identity, ttl)
    }

    /// A key and a certificate for `identity` (for the CA's own server, and tests).
    pub fn issue_with_key(
        &self,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<(Issued, String), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let issued = self.issue(&key, identity, ttl)?;
        Ok((issued, key.serialize_pem()))
    }

    fn issue(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let uri = rcgen::string::Ia5String::try_from(identity.uri())
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        let not_after = now + ttl;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        Ok(Issued {
            chain_pem,
            // Whole seconds, as the certificate holds it.
            not_after: crate::identity::not_after(cert.der()).unwrap_or(not_after),
        })
    }
}

/// The PEM blocks of a text, each with its armour.
pub fn split_pem(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The DER of one PEM certificate block.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// A key pair and a certificate signing request (PEM) for `identity`.
pub fn new_key_and_csr(identity: &Identity) -> Result<(KeyPair, String), CaError> {
    let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(identity.uri())
        .map_err(|e| CaError::BadRequest(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let pem = csr.pem().map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((key, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_only_the_identity_checked_and_rotates() {
        let dir = std::env::temp_dir().join(format!("gh-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::load_or_create(&dir, "cluster.local").expect("ca");
        let web = Identity::new("cluster.local", "shop", "web");
        let other = Identity::new("cluster.local", "shop", "admin");
        // The request asks for `admin`; the CA names the identity it was told.
        let (_key, csr) = new_key_and_csr(&other).expect("csr");
        let issued = ca.sign(&csr, &web, Duration::from_secs(600)).expect("sign");
        let der = pem_der(&issued.chain_pem).expect("der");
        assert_eq!(
            crate::identity::spiffe_id_of(&der).as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/web")
        );
        let left = issued
            .not_after
            .duration_since(SystemTime::now())
            .expect("future");
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
        let foreign = Identity::new("other.domain", "shop", "web");
        assert!(ca.sign(&csr, &foreign, Duration::from_secs(60)).is_err());
        assert!(ca.sign("not a csr", &web, Duration::from_secs(60)).is_err());

        // The same root on a second load; a new one after rotation, the old one kept.
        let again = CertificateAuthority::load_or_create(&dir, "cluster.local").expect("ca");
        assert_eq!(again.root_pem(), ca.root_pem());
        // A rotation: the next root is trusted at once but signs only once promoted.
        CertificateAuthority::rotate_root(&dir, "cluster.local", false).expect("rotate");
        assert!(CertificateAuthority::rotate_root(&dir, "cluster.local", false).is_err());
        let staged = CertificateAuthority::load(&dir, "cluster.local").expect("ca");
        assert_eq!(staged.root_pem(), ca.root_pem());
        let bundle = split_pem(staged.bundle_pem());
        assert_eq!(bundle.len(), 2);
        let mut m = RootMaterial::read_dir(&dir).expect("read").expect("root");
        assert!(!m.promote_if_due(Duration::from_secs(3600)), "not due yet");
        assert!(m.promote_if_due(Duration::ZERO));
        m.write_dir(&dir).expect("write");
        let rotated = CertificateAuthority::load(&dir, "cluster.local").expect("ca");
        assert_eq!(rotated.root_pem().trim(), bundle[1].trim());
        let bundle = split_pem(rotated.bundle_pem());
        assert_eq!(bundle.len(), 2, "the new root, then the old one");
        assert_eq!(bundle[1].trim(), ca.root_pem().trim());
        assert!(!dir.join(NEXT_CERT).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
