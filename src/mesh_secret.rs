//! The mesh CA's root on a cluster: kept in a Secret (`ca.crt`, `ca.key`,
//! `previous-roots.pem`), so every controller replica signs with the same root and a
//! restarted one keeps it. The first replica to find none makes it; if two race, the
//! loser reads the winner's.

use anyhow::{anyhow, Context};
use base64::Engine;
use gatehouse_mesh::ca::{CertificateAuthority, RootMaterial};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

const CERT: &str = "ca.crt";
const KEY: &str = "ca.key";
const PREVIOUS: &str = "previous-roots.pem";

fn secrets(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Secret"), "secrets");
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Splits `NAMESPACE/NAME`.
fn parse_name(s: &str) -> anyhow::Result<(&str, &str)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(anyhow!("--mesh-ca-secret {s:?}: expected NAMESPACE/NAME")),
    }
}

/// A data field of the Secret, decoded.
fn field(obj: &DynamicObject, secret: &str, key: &str, required: bool) -> anyhow::Result<String> {
    let Some(v) = obj.data.get("data").and_then(|d| d.get(key)) else {
        if required {
            anyhow::bail!("Secret {secret}: data.{key} is missing");
        }
        return Ok(String::new());
    };
    let text = v
        .as_str()
        .ok_or_else(|| anyhow!("Secret {secret}: data.{key} is not a string"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .with_context(|| format!("Secret {secret}: data.{key} is not base64"))?;
    String::from_utf8(raw).with_context(|| format!("Secret {secret}: data.{key} is not text"))
}

fn material(obj: &DynamicObject, secret: &str) -> anyhow::Result<RootMaterial> {
    Ok(RootMaterial {
        cert_pem: field(obj, secret, CERT, true)?,
        key_pem: field(obj, secret, KEY, true)?,
        previous_pem: field(obj, secret, PREVIOUS, false)?,
    })
}

/// The CA whose root the Secret `namespace/name` holds, making the Secret with a new
/// root if there is none.
pub async fn load_or_create(
    client: &kube::Client,
    secret: &str,
    trust_domain: &str,
) -> anyhow::Result<CertificateAuthority> {
    let (namespace, name) = parse_name(secret)?;
    let api = secrets(client, namespace);
    let obj = match api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Secret {secret}"))?
    {
        Some(obj) => obj,
        None => {
            let m = RootMaterial::generate(trust_domain)?;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "gatehouse"},
                },
                "type": "Opaque",
                "data": {CERT: b64(&m.cert_pem), KEY: b64(&m.key_pem)},
            }))?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(created) => {
                    tracing::info!(%secret, "made a new mesh root certificate");
                    created
                }
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => api
                    .get(name)
                    .await
                    .with_context(|| format!("cannot read Secret {secret}"))?,
                Err(e) => return Err(e).with_context(|| format!("cannot create Secret {secret}")),
            }
        }
    };
    let m = material(&obj, secret)?;
    Ok(CertificateAuthority::from_material(
        &m,
        trust_domain,
        &format!("Secret {secret}: data.{CERT}"),
        &format!("Secret {secret}: data.{KEY}"),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_namespace_and_name() {
        assert_eq!(
            parse_name("gatehouse-system/ca").ok(),
            Some(("gatehouse-system", "ca"))
        );
        for bad in ["ca", "/ca", "ns/", "a/b/c"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
