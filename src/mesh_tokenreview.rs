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

/// Bootstrap tokens, then TokenReview.
pub struct ReviewedTokens {
    fixed: NodeTokens,
    client: kube::Client,
    /// The node proxies' service account: its namespace, and the user name a review of
    /// its tokens answers (`system:serviceaccount:NS:SA`).
    namespace: String,
    username: String,
    /// Token -> (when reviewed, the node it speaks for).
    admitted: Mutex<HashMap<String, (Instant, String)>>,
}

impl ReviewedTokens {
    /// `account` is the node proxies' service account, `NAMESPACE/NAME`.
    pub fn new(fixed: NodeTokens, client: kube::Client, account: &str) -> anyhow::Result<Self> {
        let (namespace, name) =
            crate::mesh_secret::parse_name("--mesh-node-service-account", account)?;
        Ok(ReviewedTokens {
            fixed,
            client,
            username: format!("system:serviceaccount:{namespace}:{name}"),
            namespace: namespace.to_string(),
            admitted: Mutex::new(HashMap::new()),
        })
    }

    fn kept(&self, token: &str) -> Option<String> {
        let admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        admitted
            .get(token)
            .filter(|(at, _)| at.elapsed() < KEEP)
            .map(|(_, node)| node.clone())
    }

    fn keep(&self, token: &str, node: &str) {
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if admitted.len() >= KEEP_AT_MOST {
            admitted.retain(|_, (at, _)| at.elapsed() < KEEP);
            if admitted.len() >= KEEP_AT_MOST {
                admitted.clear();
            }
        }
        admitted.insert(token.to_string(), (Instant::now(), node.to_string()));
    }

    /// The node `token` speaks for, by the API server's review.
    async fn review(&self, token: &str) -> Result<String, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![TOKEN_AUDIENCE.to_string()]),
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
            if !audiences.iter().any(|a| a == TOKEN_AUDIENCE) {
                return Err(format!(
                    "the token is not for the audience {TOKEN_AUDIENCE}"
                ));
            }
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username != self.username {
            return Err(format!(
                "{username} is not the node proxies' service account ({})",
                self.username
            ));
        }
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        if let Some(node) = first(NODE_NAME) {
            return Ok(node);
        }
        let (Some(pod), Some(uid)) = (first(POD_NAME), first(POD_UID)) else {
            return Err(
                "the token is not bound to a pod (mount a projected service-account token)".into(),
            );
        };
        let found = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&pod)
            .await
            .map_err(|e| format!("cannot read the token's pod {}/{pod}: {e}", self.namespace))?;
        match found {
            Some(p) if p.metadata.uid.as_deref() == Some(uid.as_str()) => p
                .spec
                .and_then(|s| s.node_name)
                .ok_or_else(|| format!("the token's pod {pod} is not scheduled")),
            _ => Err(format!("the token's pod {pod} is gone")),
        }
    }
}

impl NodeAuth for ReviewedTokens {
    fn admit<'a>(&'a self, token: &'a str, node: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            match self.fixed.allows(token, node) {
                Some(true) => return Ok(()),
                Some(false) => return Err(format!("the token does not admit node {node:?}")),
                None => {}
            }
            let speaks_for = match self.kept(token) {
                Some(n) => n,
                None => {
                    let n = self.review(token).await?;
                    self.keep(token, &n);
                    n
                }
            };
            if speaks_for == node {
                Ok(())
            } else {
                Err(format!(
                    "the token speaks for node {speaks_for:?}, not {node:?}"
                ))
            }
        })
    }
}
