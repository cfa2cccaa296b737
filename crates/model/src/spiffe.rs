//! What a certificate says of its holder: its SPIFFE ID and when it expires. Shared by
//! the mesh (peers of tunnels) and the controller (proxies that present mesh
//! certificates).

use std::time::SystemTime;

/// The SPIFFE ID (URI subject alternative name) of a DER certificate.
pub fn spiffe_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// When a DER certificate expires.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let t = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
}
