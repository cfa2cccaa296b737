//! The mesh CA's root on a cluster: kept in a Secret (`ca.crt`, `ca.key`,
//! `previous-roots.pem`, and during a rotation `next.crt`, `next.key`, `next-since`), so
//! every controller replica signs with the same root and a restarted one keeps it. The
//! first replica to find none makes it; if two race, the loser reads the winner's.
//! Writes carry the resourceVersion read, so two replicas promoting a rotation at once
//! cannot both win.

use anyhow::{anyhow, Context};
use base64::Engine;
use gatehouse_mesh::ca::{CertificateAuthority, NextRoot, RootMaterial};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

const CERT: &str = "ca.crt";
const KEY: &str = "ca.key";
const PREVIOUS: &str = "previous-roots.pem";
const NEXT_CERT: &str = "next.crt";
const NEXT_KEY: &str = "next.key";
const NEXT_SINCE: &str = "next-since";

fn secrets(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Secret"), "secrets");
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Splits `NAMESPACE/NAME` (the value of `flag`).
pub(crate) fn parse_name<'a>(flag: &str, s: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(anyhow!("{flag} {s:?}: expected NAMESPACE/NAME")),
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
    let next_cert = field(obj, secret, NEXT_CERT, false)?;
    let next = match next_cert.is_empty() {
        true => None,
        false => Some(NextRoot {
            cert_pem: next_cert,
            key_pem: field(obj, secret, NEXT_KEY, true)?,
            since: field(obj, secret, NEXT_SINCE, true)?
                .trim()
                .parse()
                .with_context(|| format!("Secret {secret}: data.{NEXT_SINCE} is not a number"))?,
        }),
    };
    Ok(RootMaterial {
        cert_pem: field(obj, secret, CERT, true)?,
        key_pem: field(obj, secret, KEY, true)?,
        previous_pem: field(obj, secret, PREVIOUS, false)?,
        next,
    })
}

/// The Secret's object for `m` (with `resource_version`, for a conditional write).
fn object(
    namespace: &str,
    name: &str,
    m: &RootMaterial,
    resource_version: Option<String>,
) -> anyhow::Result<DynamicObject> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = serde_json::json!({CERT: b64(&m.cert_pem), KEY: b64(&m.key_pem)});
    if !m.previous_pem.is_empty() {
        data[PREVIOUS] = b64(&m.previous_pem).into();
    }
    if let Some(n) = &m.next {
        data[NEXT_CERT] = b64(&n.cert_pem).into();
        data[NEXT_KEY] = b64(&n.key_pem).into();
        data[NEXT_SINCE] = b64(&n.since.to_string()).into();
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "gatehouse"},
            "resourceVersion": resource_version,
        },
        "type": "Opaque",
        "data": data,
    }))?)
}

/// The root the Secret holds, and the Secret's resourceVersion; None if there is none.
pub async fn read(
    client: &kube::Client,
    secret: &str,
) -> anyhow::Result<Option<(RootMaterial, Option<String>)>> {
    let (namespace, name) = parse_name("--mesh-ca-secret", secret)?;
    let obj = secrets(client, namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Secret {secret}"))?;
    obj.map(|o| Ok((material(&o, secret)?, o.metadata.resource_version.clone())))
        .transpose()
}

/// Replaces the Secret's root, if it is still at `resource_version`: false if another
/// writer came first.
pub async fn write(
    client: &kube::Client,
    secret: &str,
    m: &RootMaterial,
    resource_version: Option<String>,
) -> anyhow::Result<bool> {
    let (namespace, name) = parse_name("--mesh-ca-secret", secret)?;
    let obj = object(namespace, name, m, resource_version)?;
    match secrets(client, namespace)
        .replace(name, &PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot write Secret {secret}")),
    }
}

/// The CA of `m`, with errors naming the Secret's fields.
pub fn authority(
    m: &RootMaterial,
    secret: &str,
    trust_domain: &str,
) -> anyhow::Result<CertificateAuthority> {
    Ok(CertificateAuthority::from_material(
        m,
        trust_domain,
        &format!("Secret {secret}: data.{CERT}"),
        &format!("Secret {secret}: data.{KEY}"),
    )?)
}

/// The CA whose root the Secret `namespace/name` holds, making the Secret with a new
/// root if there is none.
pub async fn load_or_create(
    client: &kube::Client,
    secret: &str,
    trust_domain: &str,
) -> anyhow::Result<CertificateAuthority> {
    let (namespace, name) = parse_name("--mesh-ca-secret", secret)?;
    if let Some((m, _)) = read(client, secret).await? {
        return authority(&m, secret, trust_domain);
    }
    let m = RootMaterial::generate(trust_domain)?;
    let obj = object(namespace, name, &m, None)?;
    let api = secrets(client, namespace);
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!(%secret, "made a new mesh root certificate");
            authority(&m, secret, trust_domain)
        }
        // Another replica made it first: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => match read(client, secret).await? {
            Some((m, _)) => authority(&m, secret, trust_domain),
            None => anyhow::bail!("Secret {secret} was made and is gone again"),
        },
        Err(e) => Err(e).with_context(|| format!("cannot create Secret {secret}")),
    }
}

/// Starts a rotation of the root in the Secret (with `now`, the new root signs at once).
pub async fn rotate(
    client: &kube::Client,
    secret: &str,
    trust_domain: &str,
    now: bool,
) -> anyhow::Result<()> {
    let (mut m, version) = read(client, secret)
        .await?
        .ok_or_else(|| anyhow!("Secret {secret} does not exist: no root to rotate"))?;
    m.rotate(trust_domain, now)?;
    if !write(client, secret, &m, version).await? {
        anyhow::bail!("Secret {secret} changed while it was rotated; try again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_namespace_and_name() {
        assert_eq!(
            parse_name("--x", "gatehouse-system/ca").ok(),
            Some(("gatehouse-system", "ca"))
        );
        for bad in ["ca", "/ca", "ns/", "a/b/c"] {
            assert!(parse_name("--x", bad).is_err(), "{bad}");
        }
    }
}
