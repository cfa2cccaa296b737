//! Who may follow the controller: bootstrap tokens, one per proxy (or per group), each
//! naming the role it admits and the proxy it may speak for (a gateway's id, a node
//! proxy's node; `*`: any). A proxy presents its token as `authorization: Bearer
//! TOKEN`, or a client certificate from the mesh CA over mutual TLS, whose SPIFFE ID a
//! grant may name instead of a token. The file is read again every few seconds: a
//! grant taken out is revoked, and the streams that came in with it are closed (the
//! proxy keeps serving what it has, and is refused until it is given a valid one).
//!
//! File format, one grant per line (`#` starts a comment):
//! `TOKEN ROLE NAME`, e.g. `3f9c...e1 gateway gw-1` or `a71b...04 node *`, or
//! `SPIFFE-ID ROLE NAME`, e.g. `spiffe://cluster.local/ns/gatehouse/sa/edge gateway *`.

use crate::pb::Proxy;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::RwLock;

/// A boxed future, as [`ProxyAuth`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a proxy presented: a bearer token, and the SPIFFE ID of the client certificate
/// its TLS handshake verified.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub identity: Option<String>,
}

/// Decides which proxies the controller serves.
pub trait ProxyAuth: Send + Sync + 'static {
    /// `Ok` if `who` admits `proxy`; else why not.
    fn admit<'a>(&'a self, who: &'a Credentials, proxy: &'a Proxy) -> AuthFuture<'a>;

    /// Looks again at what can change (a file, say); true when connected proxies must
    /// be checked again.
    fn refresh(&self) -> bool {
        false
    }
}

impl ProxyAuth for ProxyTokens {
    fn admit<'a>(&'a self, who: &'a Credentials, proxy: &'a Proxy) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.admits(who, proxy)))
    }

    fn refresh(&self) -> bool {
        self.reload()
    }
}

/// What a token admits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    role: String,
    name: String,
}

/// The tokens file, as last read.
#[derive(Debug)]
pub struct ProxyTokens {
    path: PathBuf,
    grants: RwLock<HashMap<String, Grant>>,
}

fn parse(text: &str) -> Result<HashMap<String, Grant>, String> {
    let mut grants = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [token, role, name] = f[..] else {
            return Err(format!("line {}: expected `TOKEN ROLE NAME`", i + 1));
        };
        if token.starts_with("spiffe://") && !token["spiffe://".len()..].contains('/') {
            return Err(format!("line {}: {token:?} is not a SPIFFE ID", i + 1));
        }
        if token.len() < 16 {
            return Err(format!(
                "line {}: a token needs 16 characters or more",
                i + 1
            ));
        }
        if crate::scope::kinds(role).is_none() {
            return Err(format!(
                "line {}: unknown role {role:?} (gateway or node)",
                i + 1
            ));
        }
        grants.insert(
            token.to_string(),
            Grant {
                role: role.to_string(),
                name: name.to_string(),
            },
        );
    }
    Ok(grants)
}

impl ProxyTokens {
    /// Reads the file; an error names the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let grants = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(ProxyTokens {
            path: path.to_path_buf(),
            grants: RwLock::new(grants),
        })
    }

    /// Reads the file again; returns whether the grants changed. An unreadable or
    /// invalid file is logged and the grants stay as they were.
    pub fn reload(&self) -> bool {
        let parsed = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse(&t));
        match parsed {
            Ok(grants) => {
                let mut current = self.grants.write().unwrap_or_else(|e| e.into_inner());
                if *current == grants {
                    return false;
                }
                *current = grants;
                true
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "proxy tokens not reloaded; the last good ones stay");
                false
            }
        }
    }

    /// Whether `who` admits `proxy` (its certificate's identity, else its token); if
    /// not, why.
    pub fn admits(&self, who: &Credentials, proxy: &Proxy) -> Result<(), String> {
        let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
        let by_identity = who.identity.as_deref().and_then(|id| grants.get(id));
        let (grant, what) = match (by_identity, who.token.as_deref()) {
            (Some(grant), _) => (grant, "certificate"),
            // A SPIFFE ID is proven by a certificate, never by being named.
            (None, Some(token)) => (
                grants
                    .get(token)
                    .filter(|_| !token.starts_with("spiffe://"))
                    .ok_or("unknown or revoked token")?,
                "token",
            ),
            (None, None) => {
                return Err(match &who.identity {
                    Some(id) => format!("no grant for {id}, and no bearer token"),
                    None => "no bearer token".into(),
                })
            }
        };
        if grant.role != proxy.role {
            return Err(format!(
                "the {what} admits a {} proxy, not a {}",
                grant.role, proxy.role
            ));
        }
        let name = match proxy.role.as_str() {
            crate::scope::NODE => &proxy.node,
            _ => &proxy.id,
        };
        if grant.name != "*" && grant.name != *name {
            return Err(format!("the {what} admits {:?}, not {name:?}", grant.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> Credentials {
        Credentials {
            token: Some(t.into()),
            identity: None,
        }
    }

    fn proxy(role: &str, id: &str, node: &str) -> Proxy {
        Proxy {
            id: id.into(),
            role: role.into(),
            node: node.into(),
            ..Proxy::default()
        }
    }

    #[test]
    fn tokens_admit_their_role_and_name_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "gw1-token-0123456789 gateway gw-1\nnodes-token-0123456789 node *  # any node\n",
        )
        .expect("write");
        let t = ProxyTokens::load(&path).expect("load");
        let gw = proxy("gateway", "gw-1", "");
        assert!(t.admits(&token("gw1-token-0123456789"), &gw).is_ok());
        assert!(t
            .admits(
                &token("gw1-token-0123456789"),
                &proxy("gateway", "gw-2", "")
            )
            .is_err_and(|e| e.contains("gw-1")));
        assert!(t
            .admits(&token("gw1-token-0123456789"), &proxy("node", "x", "n1"))
            .is_err_and(|e| e.contains("gateway proxy")));
        assert!(t
            .admits(
                &token("nodes-token-0123456789"),
                &proxy("node", "n7/node", "n7")
            )
            .is_ok());
        assert!(t.admits(&Credentials::default(), &gw).is_err());
        assert!(t.admits(&token("forged-token-0123456789"), &gw).is_err());
        // Revoked by taking the line out; an invalid file changes nothing.
        std::fs::write(&path, "nodes-token-0123456789 node *\n").expect("write");
        assert!(t.reload());
        assert!(t
            .admits(&token("gw1-token-0123456789"), &gw)
            .is_err_and(|e| e.contains("revoked")));
        std::fs::write(&path, "short gateway x\n").expect("write");
        assert!(!t.reload());
        assert!(t
            .admits(&token("nodes-token-0123456789"), &proxy("node", "n", "n1"))
            .is_ok());
        assert!(ProxyTokens::load(&path).is_err_and(|e| e.to_string().contains("line 1")));
    }

    #[test]
    fn a_certificates_spiffe_id_admits_like_a_token() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tokens");
        let edge = "spiffe://cluster.local/ns/gatehouse/sa/edge";
        std::fs::write(&path, format!("{edge} gateway *\n")).expect("write");
        let t = ProxyTokens::load(&path).expect("load");
        let cert = |id: &str| Credentials {
            token: None,
            identity: Some(id.into()),
        };
        assert!(t.admits(&cert(edge), &proxy("gateway", "gw-9", "")).is_ok());
        assert!(t
            .admits(&cert(edge), &proxy("node", "n1/node", "n1"))
            .is_err_and(|e| e.contains("certificate admits a gateway")));
        let other = "spiffe://cluster.local/ns/shop/sa/web";
        assert!(t
            .admits(&cert(other), &proxy("gateway", "gw-9", ""))
            .is_err_and(|e| e.contains(other)));
        // A token is not a certificate: the SPIFFE ID as a bearer token admits nothing.
        assert!(t
            .admits(&token(edge), &proxy("gateway", "gw-9", ""))
            .is_err_and(|e| e.contains("unknown")));
        std::fs::write(&path, format!("{edge} gateway *\nspiffe://nope node *\n")).expect("write");
        assert!(!t.reload(), "an invalid SPIFFE ID is refused");
    }
}
