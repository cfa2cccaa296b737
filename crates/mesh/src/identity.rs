//! Workload identities: SPIFFE IDs (`spiffe://TD/ns/NS/sa/SA`), the TLS server name a
//! tunnel asks for to reach one, and reading them out of X.509 certificates.

/// A workload identity: a trust domain, a namespace and a service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// The suffix of the TLS server names that name identities.
const SNI_SUFFIX: &str = ".identity.gatehouse";

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Parses `spiffe://TD/ns/NS/sa/SA`.
    pub fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_tag, ns, sa_tag, sa) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || ns_tag != "ns" || sa_tag != "sa" {
            return None;
        }
        if [td, ns, sa].iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(Identity::new(td, ns, sa))
    }

    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The TLS server name a tunnel client sends to ask for this identity's
    /// certificate: `SA.NS.identity.gatehouse` (namespaces are DNS labels; service
    /// accounts DNS subdomains).
    pub fn server_name(&self) -> String {
        format!("{}.{}{SNI_SUFFIX}", self.service_account, self.namespace)
    }

    /// The identity a server name from [`Identity::server_name`] asks for.
    pub fn from_server_name(trust_domain: &str, name: &str) -> Option<Identity> {
        let rest = name.strip_suffix(SNI_SUFFIX)?;
        let (sa, ns) = rest.rsplit_once('.')?;
        if sa.is_empty() || ns.is_empty() {
            return None;
        }
        Some(Identity::new(trust_domain, ns, sa))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

pub use gatehouse_model::spiffe::{not_after, spiffe_id_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_and_server_names() {
        let id = Identity::parse("spiffe://cluster.local/ns/shop/sa/web.api").expect("id");
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.service_account, "web.api");
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/shop/sa/web.api");
        assert_eq!(id.server_name(), "web.api.shop.identity.gatehouse");
        assert_eq!(
            Identity::from_server_name("cluster.local", &id.server_name()),
            Some(id)
        );
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/x/a/sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
        assert_eq!(Identity::from_server_name("td", "a.b.example.com"), None);
    }
}
