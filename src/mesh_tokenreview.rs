//! Node proxies on a cluster prove which node they run on with their own
//! service-account token, as ztunnel does with istiod: the DaemonSet mounts a projected
//! token for the audience `gatehouse-ca`, and the CA asks the API server to review it
//! (TokenReview). The token is admitted for a node if it is authenticated, meant for
//! that audience, belongs to the node proxies' service account, and is bound to a pod
//! on that node: the review's `node-name` extra says so, or (older API servers) its
//! `pod-name` and `pod-uid` name a live pod scheduled there. Bootstrap tokens from
//! `--mesh-node-tokens` are still honoured first. Admissions are kept for a minute, so a
//! node asking for many identities at start costs one review.

use gatehouse_mesh::ca_api::{AuthFuture, NodeAuth, NodeTokens};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audience of the tokens node proxies present to the CA.
pub const TOKEN_AUDIENCE: &str = "gatehouse-ca";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// How long an admission is kept.
const KEEP: Duration = Duration::from_secs(60);
/// At most this many admissions are kept.
const KEEP_AT_MOST: usize = 10_000;

/// What a review of a token found, once it was authenticated for the audience.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// `system:serviceaccount:NS:SA`.
    pub username: String,
    /// The pod the token is bound to, if any.
    pub pod: Option<String>,
    /// The node that pod runs on, if the token is bound to a pod.
    pub node: Option<String>,
}

/// Reviews tokens for one audience through the API server, keeping each answer for a
/// minute.
pub struct Reviewer {
    client: kube::Client,
    audience: &'static str,
    kept: Mutex<HashMap<String, (Instant, Reviewed)>>,
}

impl Reviewer {
    pub fn new(client: kube::Client, audience: &'static str) -> Self {
        Reviewer {
            client,
            audience,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The review of `token`: kept, or asked for.
    pub async fn review(&self, token: &str) -> Result<Reviewed, String> {
        if let Some(r) = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .filter(|(at, _)| at.elapsed() < KEEP)
        {
            return Ok(r.1.clone());
        }
        let r = self.ask(token).await?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= KEEP_AT_MOST {
            kept.retain(|_, (at, _)| at.elapsed() < KEEP);
            if kept.len() >= KEEP_AT_MOST {
                kept.clear();
            }
        }
        kept.insert(token.to_string(), (Instant::now(), r.clone()));
        Ok(r)
    }

    async fn ask(&self, token: &str) -> Result<Reviewed, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.audience.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("the token review failed: {e}"))?;
        let status = reviewed
            .status
            .ok_or("the token review came back without a status")?;
        if status.authenticated != Some(true) {
            return Err(format!(
                "the API server did not authenticate the token: {}",
                status.error.as_deref().unwrap_or("no reason given")
            ));
        }
        if let Some(audiences) = &status.audiences {
            if !audiences.iter().any(|a| a == self.audience) {
                return Err(format!(
                    "the token is not for the audience {}",
                    self.audience
                ));
            }
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let pod = first(POD_NAME);
        let node = match (first(NODE_NAME), &pod, first(POD_UID)) {
            (Some(node), _, _) => Some(node),
            (None, Some(pod), Some(uid)) => {
                // Older API servers name the pod only: its node is looked up.
                let namespace = username
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|r| r.split(':').next())
                    .unwrap_or("default");
                let found = Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .get_opt(pod)
                    .await
                    .map_err(|e| format!("cannot read the token's pod {namespace}/{pod}: {e}"))?;
                match found {
                    Some(p) if p.metadata.uid.as_deref() == Some(uid.as_str()) => Some(
                        p.spec
                            .and_then(|s| s.node_name)
                            .ok_or_else(|| format!("the token's pod {pod} is not scheduled"))?,
                    ),
                    _ => return Err(format!("the token's pod {pod} is gone")),
                }
            }
            _ => None,
        };
        Ok(Reviewed {
            username,
            pod,
            node,
        })
    }
}

/// Bootstrap tokens, then TokenReview.
pub struct ReviewedTokens {
    fixed: NodeTokens,
    reviewer: Reviewer,
    /// The user name a review of the node proxies' tokens answers
    /// (`system:serviceaccount:NS:SA`).
    username: String,
}

impl ReviewedTokens {
    /// `account` is the node proxies' service account, `NAMESPACE/NAME`.
    pub fn new(fixed: NodeTokens, client: kube::Client, account: &str) -> anyhow::Result<Self> {
        Ok(ReviewedTokens {
            fixed,
            reviewer: Reviewer::new(client, TOKEN_AUDIENCE),
            username: service_account_user("--mesh-node-service-account", account)?,
        })
    }
}

/// The user name of service account `NAMESPACE/NAME` (the value of `flag`).
pub fn service_account_user(flag: &str, account: &str) -> anyhow::Result<String> {
    let (namespace, name) = crate::mesh_secret::parse_name(flag, account)?;
    Ok(format!("system:serviceaccount:{namespace}:{name}"))
}

impl NodeAuth for ReviewedTokens {
    fn admit<'a>(&'a self, token: &'a str, node: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            match self.fixed.allows(token, node) {
                Some(true) => return Ok(()),
                Some(false) => return Err(format!("the token does not admit node {node:?}")),
                None => {}
            }
            let r = self.reviewer.review(token).await?;
            if r.username != self.username {
                return Err(format!(
                    "{} is not the node proxies' service account ({})",
                    r.username, self.username
                ));
            }
            match r.node {
                Some(n) if n == node => Ok(()),
                Some(n) => Err(format!("the token speaks for node {n:?}, not {node:?}")),
                None => Err(
                    "the token is not bound to a pod (mount a projected service-account token)"
                        .into(),
                ),
            }
        })
    }
}
