//! Proxies on a cluster prove who they are to the controller with their own
//! service-account token (projected for the audience `gatehouse-control`), reviewed by
//! the API server. A token is admitted for a proxy when it belongs to a service
//! account granted the proxy's role (`--control-service-account ROLE=NS/NAME`) and is
//! bound to the right pod: a node proxy's pod must run on the node it names, a
//! gateway's pod must be the one its id names (the id defaults to POD_NAME). Bootstrap
//! tokens (`--control-tokens`) are honoured first. Reviews are kept for a minute; every
//! minute connected proxies are checked again, so a token that stops being valid loses
//! its stream.

use crate::mesh_tokenreview::{service_account_user, Reviewer};
use gatehouse_control::auth::{AuthFuture, Credentials, ProxyAuth, ProxyTokens};
use gatehouse_control::pb::Proxy;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audience of the tokens proxies present to the controller.
pub const CONTROL_AUDIENCE: &str = "gatehouse-control";

/// Bootstrap tokens, then TokenReview.
pub struct ReviewedProxies {
    fixed: Option<ProxyTokens>,
    reviewer: Reviewer,
    /// (role, user name of the service account granted it).
    accounts: Vec<(String, String)>,
    last_check: Mutex<Instant>,
}

/// Parses `ROLE=NAMESPACE/NAME`.
pub fn parse_account(s: &str) -> Result<(String, String), String> {
    let (role, account) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ROLE=NAMESPACE/NAME"))?;
    if gatehouse_control::scope::kinds(role).is_none() {
        return Err(format!("{s:?}: unknown role {role:?} (gateway or node)"));
    }
    Ok((role.to_string(), account.to_string()))
}

/// The service-account user name a SPIFFE ID (`spiffe://TD/ns/NS/sa/SA`) stands for.
fn account_of(id: &str) -> Option<String> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    match path.split('/').collect::<Vec<_>>()[..] {
        ["ns", ns, "sa", sa] if !ns.is_empty() && !sa.is_empty() => {
            Some(format!("system:serviceaccount:{ns}:{sa}"))
        }
        _ => None,
    }
}

impl ReviewedProxies {
    pub fn new(
        fixed: Option<ProxyTokens>,
        client: kube::Client,
        accounts: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let accounts = accounts
            .iter()
            .map(|(role, a)| {
                Ok((
                    role.clone(),
                    service_account_user("--control-service-account", a)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ReviewedProxies {
            fixed,
            reviewer: Reviewer::new(client, CONTROL_AUDIENCE),
            accounts,
            last_check: Mutex::new(Instant::now()),
        })
    }
}

impl ProxyAuth for ReviewedProxies {
    fn admit<'a>(&'a self, who: &'a Credentials, proxy: &'a Proxy) -> AuthFuture<'a> {
        Box::pin(async move {
            let fixed = match &self.fixed {
                Some(f) => f.admits(who, proxy),
                None => Err("no bootstrap tokens".into()),
            };
            if fixed.is_ok() {
                return Ok(());
            }
            // A mesh certificate of an account granted the role.
            if let Some(user) = who.identity.as_deref().and_then(account_of) {
                if self
                    .accounts
                    .iter()
                    .any(|(role, u)| *role == proxy.role && *u == user)
                {
                    return Ok(());
                }
                if who.token.is_none() {
                    return Err(format!("{user} is not granted the role {:?}", proxy.role));
                }
            }
            let token = who.token.as_deref().ok_or("no bearer token")?;
            let r = self.reviewer.review(token).await?;
            if !self
                .accounts
                .iter()
                .any(|(role, user)| *role == proxy.role && *user == r.username)
            {
                return Err(format!(
                    "{} is not granted the role {:?}",
                    r.username, proxy.role
                ));
            }
            match proxy.role.as_str() {
                gatehouse_control::scope::NODE => match r.node {
                    Some(n) if n == proxy.node => Ok(()),
                    Some(n) => Err(format!(
                        "the token's pod runs on {n:?}, not {:?}",
                        proxy.node
                    )),
                    None => Err("the token is not bound to a pod".into()),
                },
                _ => match r.pod {
                    Some(p) if p == proxy.id => Ok(()),
                    Some(p) => Err(format!("the token is pod {p:?}'s, not {:?}'s", proxy.id)),
                    None => Err("the token is not bound to a pod".into()),
                },
            }
        })
    }

    fn refresh(&self) -> bool {
        let file_changed = self.fixed.as_ref().is_some_and(|f| f.reload());
        let mut last = self.last_check.lock().unwrap_or_else(|e| e.into_inner());
        if file_changed || last.elapsed() >= Duration::from_secs(60) {
            *last = Instant::now();
            return true;
        }
        false
    }
}
